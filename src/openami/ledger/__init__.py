"""The ledger: double-entry journals and postings in integer minor units; balances are derived; corrections are
reversals. The database itself refuses an unbalanced journal and any change to what is written (docs/ledger.md)."""
