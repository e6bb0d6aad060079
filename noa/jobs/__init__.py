"""Durable async jobs: the job model, its SQL store (leases, fencing tokens), retries, webhooks."""
