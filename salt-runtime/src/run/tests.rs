//! The run core alone: events in, effects out; no process, no database.
