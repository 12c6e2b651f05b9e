-- A board total is a sum over every open deal of a stage: kept as numeric, it cannot overflow
-- however many deals there are (the board reads it saturated to bigint).
ALTER TABLE board_counts ALTER COLUMN amount TYPE numeric;
