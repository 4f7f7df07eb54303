"""The transactional outbox: events written in the same transaction as the change they announce, then handed to
their handlers at least once, and exactly once for handlers that write only to the database.

`service.OutboxService` emits, claims, completes and fails events; `dispatcher.Dispatcher` runs handlers by topic;
`retry.RetryPolicy` is the pure backoff schedule. See docs/outbox.md.
"""
