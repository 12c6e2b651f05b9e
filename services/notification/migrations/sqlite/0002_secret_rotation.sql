-- A rotated endpoint secret keeps signing beside the new one until its overlap ends.
ALTER TABLE webhook_endpoints ADD COLUMN previous_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE webhook_endpoints ADD COLUMN previous_until INTEGER;
