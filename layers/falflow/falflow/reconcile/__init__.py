"""The reconcile function: polls fal for jobs whose webhook never came and feeds the completion hand-off."""
