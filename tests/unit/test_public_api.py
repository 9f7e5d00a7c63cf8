def test_public_api_is_declared():
    import fastsurface

    assert sorted(fastsurface.__all__) == fastsurface.__all__
    assert all(hasattr(fastsurface, name) for name in fastsurface.__all__)
