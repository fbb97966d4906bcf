-- What the judge was given for a finding (the snapshot row, the probe, the
-- prior observation, the policy and the sweep's facts), so that
-- `foreman explain` can show why and re-derive the verdict.
ALTER TABLE findings ADD COLUMN inputs TEXT;    -- JSON
