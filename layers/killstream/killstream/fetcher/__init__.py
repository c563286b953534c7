"""The fetcher side: one SQS batch of packages in, their killmails (inline, stored, or from ESI)
written in one transaction, permanent failures dead-lettered with their reason."""
