"""The local stack: falflow's real handlers on one machine, against moto's server and the fal emulator."""
