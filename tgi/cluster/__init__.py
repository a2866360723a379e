"""Many TGI endpoints as one: admission, least-outstanding routing, retries before the first token, ejection."""
