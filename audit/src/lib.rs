//! Castellan's audit log: one JSON line per event (`[audit] path`).
//!
//! The engine tells [`AuditLog`] what it decided through the core's
//! [`AuditSink`] seam; the web layer runs each request inside [`scope`], so
//! that every line carries the request's id and client address. A line is
//! formatted on the request path and handed to a bounded queue; one writer
//! thread drains it. A full queue drops the line and counts it: requests
//! never wait for the disk.

mod context;
mod line;
mod writer;

pub use context::{scope, RequestContext};
pub use line::format_line;
pub use writer::{AuditError, AuditLog, Target, DEFAULT_CAPACITY};

pub use castellan_core::audit::{AuditEvent, AuditKind, AuditSink, Outcome};
