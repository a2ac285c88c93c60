"""Fixtures shared by every tier live in tests/fixtures/, one module per area."""

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.fal_emulator",
    "tests.fixtures.completion",
]
