//! What a query does once it has a table: table handles and versions (`tables`), vector,
//! full-text and hybrid search (`query`), index management (`index`), SQL over a namespace
//! (`sql`), the expression gate every filter passes (`expr`) and bounded answers (`results`).
//!
//! Does not own: HTTP (`api`) or where table bytes come from (`store`).

pub mod expr;
pub mod index;
pub mod query;
pub mod results;
pub mod sql;
pub mod tables;
