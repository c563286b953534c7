"""Alerts: killmail events an EventBridge rule matched, posted to a Discord or Slack webhook —
the webhook's kind and its secret URL (webhook.py), the message for each kind within its limits
(message.py), and the notifier that posts them (notifier.py)."""
