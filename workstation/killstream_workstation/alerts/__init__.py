"""The workstation's side of alerts: reading and checking event patterns, and `killstream alerts
test` (which stored killmails a pattern would have matched, by EventBridge's own test)."""
