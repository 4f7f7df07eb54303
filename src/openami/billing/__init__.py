"""Billing: tariffs per account, bill cycles, billing runs, bills and their lines, posted to the ledger."""
