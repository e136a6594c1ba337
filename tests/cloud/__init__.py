"""Real OpenStack services for tests (Nova, Swift), started as processes on 127.0.0.1."""
