"""One HTTP discipline for every upstream the poller reads: the gate every request passes through
(pacing, deadline, refusals) and the client that makes the requests (User-Agent, timeouts,
retries, redirects)."""
