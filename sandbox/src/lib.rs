//! The sandbox: runs the agent for one user and speaks the router's protocol.
