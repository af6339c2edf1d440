"""An account's order journal: SQLite, durable before any order is sent.

``store`` is the journal a worker writes (intents, acks, closes, the account's state),
``schema`` its tables and migrations, ``set_aside`` what becomes of a damaged one,
``order_refs`` the orderRef scheme, ``reader`` a read-only view for reports. May import
``core`` only.
"""
