"""The poller side: one scheduled tick drains the live feed (R2Z2 or RedisQ) into SQS, paced,
and keeps the R2Z2 cursor in SSM."""
