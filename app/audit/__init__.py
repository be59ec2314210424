"""The audit trail: an AuditEvent for every interaction, successful or refused."""
