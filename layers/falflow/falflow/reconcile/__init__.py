"""The reconciler: polls fal for jobs whose webhook never came and feeds the completion intake."""
