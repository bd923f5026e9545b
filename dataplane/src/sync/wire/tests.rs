//! Golden vectors of the state-sync wire.
