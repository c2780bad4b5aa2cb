"""What the tests and the benchmarks share: the processes they start (`harness.processes`) and the
books they balance at the end of a run (`harness.books`).

Nothing here imports Django or the tests, so a benchmark's bare process can use it as well as a
pytest session.
"""
