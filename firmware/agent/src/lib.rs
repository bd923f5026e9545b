//! The HA agent: a sans-IO, no_std election core (liveness, quality factor, election, forcing, collision, pause, domains, events, status).
