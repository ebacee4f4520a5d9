"""The review queue (/console/queue/): open escalations and healing runs waiting for approval, acted on in place."""
