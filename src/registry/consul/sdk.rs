//! SDK calls (to come).
