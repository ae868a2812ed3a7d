"""Small helpers shared by the CLI, tests and benchmarks."""
