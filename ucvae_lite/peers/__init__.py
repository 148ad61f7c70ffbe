"""The methods the coupled estimator is compared with: SUMO (unbiased log p by a randomised
telescoping sum) and Markovian score climbing (MSC). They reuse ``core``'s kernels."""
