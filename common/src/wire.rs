//! Headers fleet members use between themselves on top of S3, so that each side can tell
//! who is at fault for an error and which version of an object a read is about. A client
//! may send or see these too; they never widen what a request may do.

/// On an error answer of a cache node: where the fault lies. `origin` means the node is
/// healthy but the origin failed, was slow, or refused (the router passes the answer on
/// and neither fails over nor counts it against the node). Absent on client errors (4xx
/// speak for themselves) and on the node's own faults.
pub const ERROR_SOURCE: &str = "x-lakecache-error-source";
/// Value of [`ERROR_SOURCE`] for faults of the origin behind a node.
pub const ERROR_SOURCE_ORIGIN: &str = "origin";

/// On a GET from a fleet member to a node: the version (the quoted ETag) the bytes must be
/// of. The node serves that version from what it still holds even after the object was
/// replaced — so a read that spans several nodes completes with the version it started on —
/// and answers 412 when it can neither find that version's pages nor read it from the origin.
pub const READ_VERSION: &str = "x-lakecache-read-version";
