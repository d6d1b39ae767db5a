-- Where an audited operation's time went, hop by hop (JSON written by the cloud).
ALTER TABLE audit_events ADD COLUMN trace TEXT;
