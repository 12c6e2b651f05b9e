-- An endpoint's throttle is shared by every worker: the endpoint keeps its next free slot
-- (microseconds), and a delivery given a later slot keeps it (`slot`, equal to its due time
-- while it is still its own: anything that moves the due time leaves it to take a new one).
ALTER TABLE webhook_endpoints ADD COLUMN next_slot INTEGER;
ALTER TABLE deliveries ADD COLUMN slot INTEGER;
