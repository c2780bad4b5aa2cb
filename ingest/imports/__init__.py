"""Imports (`POST /v1/import`, `GET /v1/import/<id>`): a file of Terra payloads, attributed
to the user who sends it, streamed into the ledger by a task.

- `reader`: entries out of a stored JSON array or NDJSON file, streamed, each with its raw text and
  the byte offset after it (the checkpoint).
- `services`: the upload (spooled under the size cap, stored, the job row, the task published after
  commit), the job run (batches with their checkpoint, deliveries counted, failure and its
  dead-letter copy) and the requeue of jobs whose message was lost.
- `views`, `urls`: the two endpoints.
"""
