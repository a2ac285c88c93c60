"""The completion hand-off, shared by the webhook and reconcile functions: fal's answer for a job
(a verified delivery or a polled result) is recorded once and handed to the store function through
the outputs queue; the finaliser writes a job's final state and its one event."""
