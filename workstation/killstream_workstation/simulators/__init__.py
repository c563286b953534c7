"""Local servers that speak R2Z2, RedisQ and ESI as docs/protocols.md ("R2Z2", "RedisQ", "ESI")
describes them, with fault injection: for the tests, the chaos suite and `killstream run --replay`."""
