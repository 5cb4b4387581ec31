"""Everything that runs a grid: plan, runner, store, scores."""
