from protocol.accept import qualities


def test_qualities_of_an_accept_header() -> None:
    assert qualities("") == []
    assert qualities("gzip, Deflate;q=0.5 , br;q=0, *;q=nonsense,,") == [
        ("gzip", 1.0),
        ("deflate", 0.5),
        ("br", 0.0),
        ("*", None),
    ]
    assert qualities("fr-FR;level=1;q=0.8") == [("fr-fr", 0.8)]
