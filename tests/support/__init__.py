"""What tests share: fakes (fakes.py), SQS helpers over a real endpoint (sqs.py) and the
stored-rows assertions (stored.py). Tests import from here, never from one another."""
