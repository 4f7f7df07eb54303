"""Sites, customers, accounts, service points, meters and transformers: the physical and commercial tree."""
