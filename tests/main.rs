mod checkpoints;
mod cli;
mod methods;
