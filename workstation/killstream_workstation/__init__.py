"""Everything that runs killstream on one machine: the embedded PostgreSQL, the protocol
simulators, the corpus of sample killmails and the local pipeline runner.

Not shipped in the Lambda layer (see layers/killstream/Makefile)."""
