"""The method itself: targets, the IWAE-augmented space, the CIS kernel and its coupling, the
coupled-chain driver, H_{k:m}'s coefficients, the estimate and the surrogate whose gradient is
the unbiased one. Imports nothing from the other layers.

Reading order: ``targets`` → ``iwae`` → ``kernels`` → ``coupled`` (the driver) → ``hkm`` →
``estimate`` → ``surrogate``. ``machinery`` holds what only makes the driver fast;
``rejuvenation`` the optional MH move; ``diagnostics`` the rules that say when it is practical.
"""
