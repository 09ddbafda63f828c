//! The end-to-end suite: one test binary, several modules.

mod accounts;
mod audit;
mod backup;
mod bad_input;
mod browser;
mod crash;
mod demo;
mod encryption;
mod faults;
mod files;
mod fuzz;
mod hostile_device;
mod layers;
mod limits;
mod merge;
mod office_journey;
mod replica;
mod reports;
mod server_processes;
mod soak;
mod store_contract;
mod sync;
mod sync_hostile;
mod tls;
mod upgrade;
mod web_guards;
