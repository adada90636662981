"""Every governance write goes through a function here: one transaction, an audit event,
and a policy invalidation once the transaction commits."""
