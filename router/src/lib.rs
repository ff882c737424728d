//! The router: accounts, the API, the proxy to sandboxes and the model gateway.
