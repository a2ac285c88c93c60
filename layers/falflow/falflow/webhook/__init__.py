"""The webhook function: fal's signed completion, verified, recorded through the completion hand-off."""
