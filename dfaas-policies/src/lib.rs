//! `dfaas-policies` will hold the policies for the DFaaS environment:
//! multi-agent PPO written once over a CPU and a GPU backend, the heuristic
//! baselines (all-local, random, static split, the DFaaS platform's
//! strategies) and checkpoints. Nothing is implemented yet.
