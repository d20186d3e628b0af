module github.com/zerodiff/zerodiff

go 1.26.8
