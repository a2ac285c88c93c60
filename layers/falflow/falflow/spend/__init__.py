"""Spend control: budgets checked before submit, over-budget jobs HELD (never dropped) and released
on their own. Why: docs/adr/0030-budgets-reserve-each-estimate-before-submit.md."""
