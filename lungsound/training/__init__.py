"""The training engine: one loop for every method (objectives plug in; see `lungsound.methods.base`)."""
