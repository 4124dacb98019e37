//! Behaviour tests of the whole buffer.
