"""`make bench`: benchmarks that print their figures next to a baseline measured in the same run."""
