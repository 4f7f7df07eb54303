"""Relay control: commands to meters (disconnect, reconnect, read now, set clock) queued per meter, checked
against the site's safety policy, sent through the head-end, confirmed only by the meter's own report, retried
with backoff and ended unconfirmed or expired at their deadline."""
