"""Prepaid accounts: wallets, credit rules, online payments and offline tokens."""
