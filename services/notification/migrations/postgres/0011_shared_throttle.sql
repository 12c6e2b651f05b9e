-- An endpoint's throttle is shared by every replica: the endpoint keeps its next free slot,
-- taken one at a time by a single update, and a delivery given a later slot keeps it in the
-- queue (`slot`, equal to its due time while it is still its own: anything that moves the
-- due time, a redelivery say, leaves it to take a new one).
ALTER TABLE webhook_endpoints ADD COLUMN next_slot timestamptz;
ALTER TABLE delivery_queue ADD COLUMN slot timestamptz;
